//! Oracle tests: qemu-img makes and judges images; our readers and writers must agree with it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::header::{SparseHeader, SECTOR};
use crate::formats::{DiskReader, Extent, FormatError, Options, Target};
use crate::test_tools::{
    oracles, python_module, qemu_img_check, qemu_img_compare, qemu_img_info, Tool,
};

/// Raw fixture size: 40 MiB of ext4 plus 100 KiB, not a whole number of 64 KiB grains.
const RAW_SIZE: u64 = (40 << 20) + 100 * 1024;

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// A raw disk: ext4 filled from /usr/share/i18n, then a random tail past the filesystem, with
/// zero gaps between.
fn make_raw(mkfs: &Tool, dir: &Path) -> PathBuf {
    let raw = dir.join("disk.raw");
    File::create(&raw).unwrap().set_len(40 << 20).unwrap();
    mkfs.run(["-q", "-F", "-d", "/usr/share/i18n", p(&raw)]);
    let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    f.set_len(RAW_SIZE).unwrap();
    let noise: Vec<u8> = (0..12288u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    f.write_all_at(&noise, RAW_SIZE - 12288).unwrap();
    raw
}

fn read_all(reader: &mut dyn DiskReader, mut each: impl FnMut(u64, &[u8])) {
    let size = reader.virtual_size();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0;
    while offset < size {
        let m = reader.map(offset).unwrap();
        assert!(m.len > 0 && offset + m.len <= size);
        let mut done = 0;
        while done < m.len {
            let n = (m.len - done).min(buf.len() as u64) as usize;
            reader.read_at(offset + done, &mut buf[..n]).unwrap();
            if m.extent == Extent::Zero {
                assert!(
                    buf[..n].iter().all(|&b| b == 0),
                    "zero run at {:#x} holds data",
                    offset + done
                );
            }
            each(offset + done, &buf[..n]);
            done += n as u64;
        }
        offset += m.len;
    }
}

fn assert_reads_as_raw(reader: &mut dyn DiskReader, raw: &Path) {
    let raw = std::fs::read(raw).unwrap();
    assert_eq!(reader.virtual_size(), raw.len() as u64);
    read_all(reader, |offset, bytes| {
        let o = offset as usize;
        assert!(
            bytes == &raw[o..o + bytes.len()],
            "bytes differ at {offset:#x}"
        );
    });
}

/// Feeds a writer like the generic convert loop: whole units, all-zero units skipped.
fn write_raw(raw: &Path, target: &Path, final_path: &Path, options: &str) {
    let size = std::fs::metadata(raw).unwrap().len();
    let options = Options::parse(options).unwrap();
    let mut w = super::create(
        Target {
            path: target,
            final_path,
        },
        size,
        &options,
    )
    .unwrap();
    let unit = w.granularity() as usize;
    let mut f = File::open(raw).unwrap();
    let mut buf = vec![0u8; unit];
    let mut offset = 0u64;
    while offset < size {
        let n = (size - offset).min(unit as u64) as usize;
        f.read_exact(&mut buf[..n]).unwrap();
        if buf[..n].iter().any(|&b| b != 0) {
            w.write_data(offset, &buf[..n]).unwrap();
        }
        offset += n as u64;
    }
    w.finish().unwrap();
}

fn open(path: &Path) -> Result<Box<dyn DiskReader>, FormatError> {
    super::open(path, File::open(path).unwrap())
}

fn check_and_compare(qemu: &Tool, raw: &Path, image: &Path) {
    qemu_img_check(qemu, image, "vmdk");
    qemu_img_compare(qemu, raw, image, "vmdk");
}

/// The CID qemu put in an image's embedded descriptor.
fn qemu_cid(image: &Path) -> String {
    let bytes = std::fs::read(image).unwrap();
    let text = String::from_utf8_lossy(&bytes[512..512 * 21]);
    let line = text.lines().find(|l| l.starts_with("CID=")).unwrap();
    line["CID=".len()..].to_owned()
}

#[test]
fn reads_every_qemu_subformat_as_the_raw_disk() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = make_raw(&mkfs, dir.path());
    for (name, opts) in [
        ("sparse.vmdk", "subformat=monolithicSparse"),
        ("zeroed.vmdk", "subformat=monolithicSparse,zeroed_grain=on"),
        ("stream.vmdk", "subformat=streamOptimized"),
        ("flat.vmdk", "subformat=monolithicFlat"),
    ] {
        let image = dir.path().join(name);
        qemu.run([
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            opts,
            p(&raw),
            p(&image),
        ]);
        let mut reader = open(&image).unwrap();
        assert_reads_as_raw(reader.as_mut(), &raw);
        let check = super::check(&image, File::open(&image).unwrap()).unwrap();
        assert_eq!(check.exit_code(), 0, "{name}: {:?}", check.corruptions);
    }
}

#[test]
fn monolithic_sparse_is_byte_identical_to_qemu() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = make_raw(&mkfs, dir.path());
    for opts in ["", "adapter_type=lsilogic,hwversion=13,zeroed_grain=on"] {
        let qemu_dir = dir.path().join("qemu");
        let ours_dir = dir.path().join("ours");
        std::fs::create_dir_all(&qemu_dir).unwrap();
        std::fs::create_dir_all(&ours_dir).unwrap();
        let theirs = qemu_dir.join("disk.vmdk");
        let mut args = vec!["convert", "-f", "raw", "-O", "vmdk"];
        if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        args.extend([p(&raw), p(&theirs)]);
        qemu.run(&args);
        let ours = ours_dir.join("disk.vmdk");
        let tmp = ours_dir.join("disk.vmdk.part");
        let cid = format!("cid={}", qemu_cid(&theirs));
        let all = if opts.is_empty() {
            cid
        } else {
            format!("{opts},{cid}")
        };
        write_raw(&raw, &tmp, &ours, &all);
        let a = std::fs::read(&theirs).unwrap();
        let b = std::fs::read(&tmp).unwrap();
        assert_eq!(a.len(), b.len(), "file lengths differ for {opts:?}");
        let first = a.iter().zip(&b).position(|(x, y)| x != y);
        assert_eq!(first, None, "first difference at {first:x?} for {opts:?}");
    }
}

#[test]
fn stream_writers_pass_qemu_check_and_compare() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = make_raw(&mkfs, dir.path());
    let theirs = dir.path().join("qemu-stream.vmdk");
    qemu.run([
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        p(&raw),
        p(&theirs),
    ]);
    let qemu_len = std::fs::metadata(&theirs).unwrap().len() as f64;
    for layout in ["vmware", "qemu"] {
        let ours = dir.path().join(format!("{layout}.vmdk"));
        write_raw(
            &raw,
            &ours,
            &ours,
            &format!("subformat=streamOptimized,stream_layout={layout},cid=1234abcd"),
        );
        check_and_compare(&qemu, &raw, &ours);
        let len = std::fs::metadata(&ours).unwrap().len() as f64;
        assert!(
            (len / qemu_len - 1.0).abs() < 0.03,
            "{layout}: {len} bytes vs qemu's {qemu_len}"
        );
        let mut reader = open(&ours).unwrap();
        assert_reads_as_raw(reader.as_mut(), &raw);
        let check = super::check(&ours, File::open(&ours).unwrap()).unwrap();
        assert_eq!(check.exit_code(), 0, "{layout}: {:?}", check.corruptions);
        let info = reader.info();
        assert_eq!(info.subformat.as_deref(), Some("streamOptimized"));
        assert_eq!(info.compression.as_deref(), Some("deflate"));
        assert_eq!(info.format_specific["cid"], 0x1234abcd);
        assert_eq!(info.format_specific["extents"][0]["compressed"], true);
    }
    // VMware's layout: GD_AT_END in the header, the real GD in the footer, EOS at the end.
    let vmware = std::fs::read(dir.path().join("vmware.vmdk")).unwrap();
    let header = SparseHeader::parse(&vmware[..512]).unwrap();
    assert_eq!(header.gd_offset, u64::MAX);
    let footer = SparseHeader::parse(&vmware[vmware.len() - 1024..vmware.len() - 512]).unwrap();
    assert_ne!(footer.gd_offset, u64::MAX);
    assert_eq!(&vmware[vmware.len() - 512..], &[0u8; 512][..]);
    let text = String::from_utf8_lossy(&vmware[512..512 * 21]);
    for needle in [
        "createType=\"streamOptimized\"",
        "ddb.adapterType = \"lsilogic\"",
        "ddb.geometry.heads = \"255\"",
        "ddb.longContentID",
        "ddb.toolsInstallType",
    ] {
        assert!(text.contains(needle), "descriptor lacks {needle}");
    }
}

#[test]
fn stream_reader_walks_both_layouts_forwards() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = make_raw(&mkfs, dir.path());
    let theirs = dir.path().join("qemu.vmdk");
    qemu.run([
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        p(&raw),
        p(&theirs),
    ]);
    let vmware = dir.path().join("vmware.vmdk");
    write_raw(&raw, &vmware, &vmware, "subformat=streamOptimized");
    for image in [&theirs, &vmware] {
        let len = std::fs::metadata(image).unwrap().len();
        let mut reader =
            super::open_stream(image, Box::new(File::open(image).unwrap()), len).unwrap();
        assert_reads_as_raw(reader.as_mut(), &raw);
    }
    let len = std::fs::metadata(&vmware).unwrap().len();
    let mut reader =
        super::open_stream(&vmware, Box::new(File::open(&vmware).unwrap()), len).unwrap();
    let mut buf = vec![0u8; 4096];
    reader.read_at(30 << 20, &mut buf).unwrap();
    assert!(matches!(
        reader.read_at(0, &mut buf),
        Err(FormatError::OutOfOrder { .. })
    ));
}

#[test]
fn flat_writer_makes_descriptor_and_extent_qemu_reads() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = make_raw(&mkfs, dir.path());
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let final_path = out.join("disk.vmdk");
    let tmp = out.join("disk.vmdk.part");
    write_raw(&raw, &tmp, &final_path, "subformat=monolithicFlat,cid=abc");
    std::fs::rename(&tmp, &final_path).unwrap();
    let text = std::fs::read_to_string(&final_path).unwrap();
    assert!(text.starts_with("# Disk DescriptorFile\n"));
    assert!(
        text.contains("RW 82120 FLAT \"disk-flat.vmdk\" 0\n"),
        "{text}"
    );
    assert!(out.join("disk-flat.vmdk").exists());
    check_and_compare(&qemu, &raw, &final_path);
    let mut reader = open(&final_path).unwrap();
    assert_reads_as_raw(reader.as_mut(), &raw);
}

#[test]
fn blank_images_of_every_subformat_are_valid() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for opts in [
        "subformat=monolithicSparse",
        "subformat=streamOptimized",
        "subformat=streamOptimized,stream_layout=qemu",
        "subformat=monolithicFlat",
    ] {
        let path = dir
            .path()
            .join(format!("{}.vmdk", opts.replace([',', '='], "_")));
        let w = super::create(
            Target {
                path: &path,
                final_path: &path,
            },
            3 << 30,
            &Options::parse(opts).unwrap(),
        )
        .unwrap();
        w.finish().unwrap();
        qemu_img_check(&qemu, &path, "vmdk");
        let info = qemu_img_info(&qemu, &path, Some("vmdk"));
        assert_eq!(info["virtual-size"], 3u64 << 30, "{opts}");
        let mut reader = open(&path).unwrap();
        let mut buf = vec![1u8; 4096];
        reader.read_at(0, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0), "{opts}");
        if !opts.ends_with("monolithicFlat") {
            assert_eq!(reader.map(0).unwrap().extent, Extent::Zero);
        }
    }
}

#[test]
fn bad_options_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.vmdk");
    for opts in [
        "subformat=twoGbMaxExtentSparse",
        "stream_layout=qemu",
        "compat6,hwversion=7",
        "cid=123456789",
        "hwversion=x",
        "subformat=monolithicFlat,zeroed_grain=on",
        "bogus=1",
    ] {
        let r = super::create(
            Target {
                path: &path,
                final_path: &path,
            },
            1 << 20,
            &Options::parse(opts).unwrap(),
        );
        assert!(
            matches!(r, Err(FormatError::InvalidOption { .. })),
            "{opts} accepted"
        );
    }
}

fn small_sparse(qemu: &Tool, dir: &Path) -> (PathBuf, PathBuf) {
    let raw = dir.join("small.raw");
    let f = File::create(&raw).unwrap();
    f.set_len(4 << 20).unwrap();
    f.write_all_at(&[7u8; 200_000], 100_000).unwrap();
    let image = dir.join("small.vmdk");
    qemu.run(["convert", "-f", "raw", "-O", "vmdk", p(&raw), p(&image)]);
    (raw, image)
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

#[test]
fn truncated_image_is_rejected() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, image) = small_sparse(&qemu, dir.path());
    File::options()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(300)
        .unwrap();
    assert!(matches!(open(&image), Err(FormatError::Malformed { .. })));
}

#[test]
fn grain_directory_past_eof_is_rejected() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, image) = small_sparse(&qemu, dir.path());
    patch(&image, 56, &0x10_0000u64.to_le_bytes()); // gdOffset far past the end
    assert!(matches!(open(&image), Err(FormatError::Malformed { .. })));
}

#[test]
fn huge_capacity_is_refused_without_allocating() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, image) = small_sparse(&qemu, dir.path());
    patch(&image, 12, &(1u64 << 37).to_le_bytes()); // 64 TiB: a 32 MiB GD, past the file
    assert!(open(&image).is_err());
}

#[test]
fn grain_past_eof_fails_reads_and_check() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, image) = small_sparse(&qemu, dir.path());
    let h = SparseHeader::parse(&std::fs::read(&image).unwrap()[..512]).unwrap();
    // First entry of the first GT (primary copy) points far past the end.
    let gt = h.gd_offset + 1;
    patch(&image, gt * SECTOR + 4, &0x0fff_0000u32.to_le_bytes());
    let mut reader = open(&image).unwrap();
    let mut buf = vec![0u8; 65536];
    assert!(reader.read_at(65536, &mut buf).is_err());
    let report = super::check(&image, File::open(&image).unwrap()).unwrap();
    assert_eq!(report.exit_code(), 2);
}

#[test]
fn grain_claimed_twice_is_reported() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, image) = small_sparse(&qemu, dir.path());
    let bytes = std::fs::read(&image).unwrap();
    let h = SparseHeader::parse(&bytes[..512]).unwrap();
    for table in [h.gd_offset + 1, h.rgd_offset + 1] {
        let at = (table * SECTOR) as usize;
        patch(&image, table * SECTOR + 8, &bytes[at + 4..at + 8]); // entry 2 := entry 1
    }
    let report = super::check(&image, File::open(&image).unwrap()).unwrap();
    assert!(
        report.corruptions.iter().any(|c| c.contains("twice")),
        "{:?}",
        report.corruptions
    );
}

#[test]
fn redundant_table_mismatch_is_reported() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, image) = small_sparse(&qemu, dir.path());
    let h = SparseHeader::parse(&std::fs::read(&image).unwrap()[..512]).unwrap();
    patch(&image, (h.rgd_offset + 1) * SECTOR + 4, &0u32.to_le_bytes());
    let report = super::check(&image, File::open(&image).unwrap()).unwrap();
    assert!(
        report.corruptions.iter().any(|c| c.contains("redundant")),
        "{:?}",
        report.corruptions
    );
}

#[test]
fn hostile_stream_markers_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("s.raw");
    let f = File::create(&raw).unwrap();
    f.set_len(1 << 20).unwrap();
    f.write_all_at(&[9u8; 4096], 0).unwrap();
    let image = dir.path().join("s.vmdk");
    write_raw(&raw, &image, &image, "subformat=streamOptimized");
    let first = 128 * SECTOR;
    for (what, bytes) in [
        (
            "huge compressed size",
            (first + 8, 0x7fff_ffffu32.to_le_bytes().to_vec()),
        ),
        (
            "lba past the disk",
            (first, (1u64 << 30).to_le_bytes().to_vec()),
        ),
    ] {
        let copy = dir.path().join("bad.vmdk");
        std::fs::copy(&image, &copy).unwrap();
        patch(&copy, bytes.0, &bytes.1);
        let len = std::fs::metadata(&copy).unwrap().len();
        let stream = super::open_stream(&copy, Box::new(File::open(&copy).unwrap()), len);
        let failed = match stream {
            Err(_) => true,
            Ok(mut r) => {
                let mut buf = vec![0u8; 4096];
                r.read_at(0, &mut buf).is_err()
            }
        };
        assert!(failed, "{what} accepted by the stream reader");
        let mut reader = open(&copy).unwrap();
        let mut buf = vec![0u8; 4096];
        assert!(
            reader.read_at(0, &mut buf).is_err(),
            "{what} accepted by the random reader"
        );
    }
}

#[test]
fn parent_descriptor_is_refused() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vmdk");
    qemu.run(["create", "-f", "vmdk", p(&base), "1M"]);
    let child = dir.path().join("child.vmdk");
    qemu.run([
        "create",
        "-f",
        "vmdk",
        "-b",
        p(&base),
        "-F",
        "vmdk",
        p(&child),
    ]);
    assert!(matches!(open(&child), Err(FormatError::Unsupported { .. })));
}

#[test]
fn flat_descriptor_escaping_its_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d.vmdk");
    let mut f = File::create(&d).unwrap();
    f.write_all(b"# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"../etc/passwd\" 0\n").unwrap();
    assert!(matches!(open(&d), Err(FormatError::Unsupported { .. })));
}

/// A monolithicFlat descriptor `d.vmdk` claiming `sectors` over a 4 KiB extent `d-flat.vmdk`.
fn flat_claiming(dir: &Path, sectors: u64) -> PathBuf {
    std::fs::write(dir.join("d-flat.vmdk"), [0x11u8; 4096]).unwrap();
    let d = dir.join("d.vmdk");
    let text = format!("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW {sectors} FLAT \"d-flat.vmdk\" 0\n");
    std::fs::write(&d, text).unwrap();
    d
}

#[test]
fn flat_extent_claiming_more_than_its_file_is_refused_naming_the_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    // 8 sectors are exactly the 4 KiB extent: fine.
    let d = flat_claiming(dir.path(), 8);
    assert_eq!(open(&d).unwrap().virtual_size(), 4096);
    crate::formats::check(&d, None).unwrap();
    // One sector more than the file holds, and the 2^55 - 1 sectors (16 EiB).
    for sectors in [9, 36028797018963967] {
        let d = flat_claiming(dir.path(), sectors);
        for error in [
            open(&d).err().unwrap(),
            crate::formats::check(&d, None).unwrap_err(),
        ] {
            assert!(
                matches!(&error, FormatError::Malformed { path, .. } if *path == d),
                "{sectors}: {error}"
            );
        }
    }
}

#[test]
fn resize_grows_sparse_and_refuses_streams() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (raw, image) = small_sparse(&qemu, dir.path());
    let stream = dir.path().join("st.vmdk");
    write_raw(&raw, &stream, &stream, "subformat=streamOptimized");
    // 4 MiB uses one GT; its GD sector has room for 128 tables (4 GiB).
    super::resize(
        &image,
        File::options().read(true).write(true).open(&image).unwrap(),
        300 << 20,
        false,
    )
    .unwrap();
    qemu.run(["check", "-f", "vmdk", p(&image)]);
    File::options()
        .write(true)
        .open(&raw)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    qemu.run(["compare", "-f", "raw", "-F", "vmdk", p(&raw), p(&image)]);
    assert!(matches!(
        super::resize(
            &image,
            File::options().read(true).write(true).open(&image).unwrap(),
            1 << 20,
            false
        ),
        Err(FormatError::ShrinkRefused { .. })
    ));
    assert!(matches!(
        super::resize(
            &image,
            File::options().read(true).write(true).open(&image).unwrap(),
            8 << 30,
            false
        ),
        Err(FormatError::Unsupported { .. })
    ));
    assert!(matches!(
        super::resize(
            &stream,
            File::options()
                .read(true)
                .write(true)
                .open(&stream)
                .unwrap(),
            4 << 30,
            false
        ),
        Err(FormatError::Unsupported { .. })
    ));
}

/// libvmdk (python3-libvmdk), an independent reader, reads every subformat we write as the raw
/// disk. Skipped, loudly, where it is not installed.
#[test]
fn libvmdk_reads_our_images() {
    let Some(python) = python_module("pyvmdk", "python3-libvmdk") else {
        return;
    };
    let Some([mkfs]) = oracles(["mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = make_raw(&mkfs, dir.path());
    const SCRIPT: &str = "import pyvmdk, sys, hashlib
h = pyvmdk.handle(); h.open(sys.argv[1]); h.open_extent_data_files()
size = h.get_media_size(); d = hashlib.sha256(); off = 0
while off < size:
    n = min(1 << 20, size - off); d.update(h.read_buffer_at_offset(n, off)); off += n
print(size, d.hexdigest())";
    let want = {
        use sha2::Digest;
        let bytes = std::fs::read(&raw).unwrap();
        format!(
            "{} {}",
            bytes.len(),
            hex::encode(sha2::Sha256::digest(&bytes))
        )
    };
    for opts in [
        "subformat=monolithicSparse",
        "subformat=streamOptimized",
        "subformat=streamOptimized,stream_layout=qemu",
        "subformat=monolithicFlat",
    ] {
        let path = dir
            .path()
            .join(format!("{}.vmdk", opts.replace([',', '='], "_")));
        write_raw(&raw, &path, &path, opts);
        let out = python.run(["-c", SCRIPT, p(&path)]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want, "{opts}");
    }
}

#[test]
fn footer_differing_from_header_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("f.raw");
    let f = File::create(&raw).unwrap();
    f.set_len(1 << 20).unwrap();
    f.write_all_at(&[5u8; 4096], 65536).unwrap();
    let image = dir.path().join("f.vmdk");
    write_raw(&raw, &image, &image, "subformat=streamOptimized");
    let clean = super::check(&image, File::open(&image).unwrap()).unwrap();
    assert_eq!(clean.exit_code(), 0, "{:?}", clean.corruptions);
    assert_eq!(clean.allocated_clusters, Some(1));
    patch(&image, 64, &129u64.to_le_bytes()); // header overHead no longer matches the footer's
    let report = super::check(&image, File::open(&image).unwrap()).unwrap();
    assert!(
        report.corruptions.iter().any(|c| c.contains("footer")),
        "{:?}",
        report.corruptions
    );
}

#[test]
fn stream_metadata_marker_past_the_end_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("m.raw");
    let f = File::create(&raw).unwrap();
    f.set_len(1 << 20).unwrap();
    f.write_all_at(&[5u8; 4096], 0).unwrap();
    let image = dir.path().join("m.vmdk");
    write_raw(&raw, &image, &image, "subformat=streamOptimized");
    let bytes = std::fs::read(&image).unwrap();
    // The first metadata marker after the grain is the GT marker; make it claim 2^40 sectors.
    let gt_marker = (128 * SECTOR as usize + 512..bytes.len())
        .step_by(512)
        .find(|&at| bytes[at + 8..at + 16] == [0, 0, 0, 0, 1, 0, 0, 0])
        .unwrap();
    patch(&image, gt_marker as u64, &(1u64 << 40).to_le_bytes());
    let len = bytes.len() as u64;
    let mut reader =
        super::open_stream(&image, Box::new(File::open(&image).unwrap()), len).unwrap();
    let mut buf = vec![0u8; 65536];
    // Walking past the grain (the reader peeks ahead once it has it) hits the bad marker.
    let result = reader
        .read_at(0, &mut buf)
        .and_then(|()| reader.read_at(65536, &mut buf));
    assert!(
        matches!(result, Err(FormatError::Malformed { .. })),
        "{result:?}"
    );
}

#[test]
fn qemu_stream_layout_front_matches_qemu() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("q.raw");
    let f = File::create(&raw).unwrap();
    f.set_len(70 << 20).unwrap();
    f.write_all_at(&[3u8; 200_000], 33 << 20).unwrap();
    let qemu_dir = dir.path().join("qemu");
    let ours_dir = dir.path().join("ours");
    std::fs::create_dir_all(&qemu_dir).unwrap();
    std::fs::create_dir_all(&ours_dir).unwrap();
    let theirs = qemu_dir.join("s.vmdk");
    qemu.run([
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        p(&raw),
        p(&theirs),
    ]);
    let ours = ours_dir.join("s.vmdk");
    let opts = format!(
        "subformat=streamOptimized,stream_layout=qemu,cid={}",
        qemu_cid(&theirs)
    );
    write_raw(&raw, &ours, &ours, &opts);
    let a = std::fs::read(&theirs).unwrap();
    let b = std::fs::read(&ours).unwrap();
    let h = SparseHeader::parse(&a[..512]).unwrap();
    assert_eq!(&a[..512], &b[..512], "headers differ");
    // Descriptor and both grain directories (one sector each here) are identical.
    for sector in [1, h.rgd_offset, h.gd_offset] {
        let at = (sector * SECTOR) as usize;
        let len = if sector == 1 { 20 * 512 } else { 512 };
        assert!(
            a[at..at + len] == b[at..at + len],
            "sector {sector} differs"
        );
    }
    check_and_compare(&qemu, &raw, &ours);
}

/// Reads up to the first 8 MiB through every entry point, ignoring errors: only panics, hangs
/// and huge allocations fail the caller.
fn exercise(image: &Path) {
    if let Ok(mut r) = open(image) {
        let end = r.virtual_size().min(8 << 20);
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0;
        while offset < end {
            let Ok(m) = r.map(offset) else { break };
            let n = m.len.min(end - offset).min(buf.len() as u64);
            if r.read_at(offset, &mut buf[..n as usize]).is_err() {
                break;
            }
            offset += n;
        }
    }
    let _ = super::check(image, File::open(image).unwrap());
    let len = std::fs::metadata(image).unwrap().len();
    if let Ok(mut r) = super::open_stream(image, Box::new(File::open(image).unwrap()), len) {
        let end = r.virtual_size().min(8 << 20);
        let mut buf = vec![0u8; 65536];
        let mut offset = 0;
        while offset < end {
            let Ok(m) = r.map(offset) else { break };
            let n = m.len.min(end - offset).min(buf.len() as u64);
            if r.read_at(offset, &mut buf[..n as usize]).is_err() {
                break;
            }
            offset += n;
        }
    }
}

#[test]
fn single_byte_corruptions_never_panic() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (raw, sparse) = small_sparse(&qemu, dir.path());
    let vmware = dir.path().join("vmware.vmdk");
    write_raw(&raw, &vmware, &vmware, "subformat=streamOptimized");
    let qemu = dir.path().join("qemu.vmdk");
    write_raw(
        &raw,
        &qemu,
        &qemu,
        "subformat=streamOptimized,stream_layout=qemu",
    );
    let bad = dir.path().join("bad.vmdk");
    // A fixed pseudo-random walk over the metadata (and the stream's tail): offset, new byte.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for image in [&sparse, &vmware, &qemu] {
        let bytes = std::fs::read(image).unwrap();
        for i in 0..150 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let region = if i % 3 == 0 { bytes.len() } else { 128 * 512 };
            let at = (state % region as u64) as usize;
            let mut copy = bytes.clone();
            copy[at] ^= (state >> 56) as u8 | 1;
            std::fs::write(&bad, &copy).unwrap();
            exercise(&bad);
        }
    }
}

//! Oracle tests against qemu-img 10: reading its VHDs, writing byte-identical ones, check,
//! resize and hostile inputs.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::formats::{DiskReader, Extent, Options, Probe, Target};
use crate::test_tools::{oracles, qemu_virtual_size, Tool};

/// Shared by the VHD and VDI oracle tests.
pub(crate) mod fixture {
    use super::*;

    /// A raw disk of 30 MiB + 3 sectors: an ext4 filesystem with real files in its first
    /// 24 MiB, a hole, a 300 KiB patterned run at 27 MiB and bytes in the last sector. Its
    /// size is neither a block multiple nor a CHS size.
    pub fn raw_image(mkfs: &Tool, dir: &Path) -> PathBuf {
        let path = dir.join("source.raw");
        let file = File::create(&path).unwrap();
        file.set_len(24 << 20).unwrap();
        drop(file);
        mkfs.run([
            "-q".as_ref(),
            "-F".as_ref(),
            "-d".as_ref(),
            "/usr/share/doc/git".as_ref(),
            path.as_os_str(),
        ]);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len((30 << 20) + 3 * 512).unwrap();
        let pattern: Vec<u8> = (0..300 * 1024u32).map(|i| (i * 7 + 1) as u8).collect();
        file.write_all_at(&pattern, 27 << 20).unwrap();
        file.write_all_at(b"the last sector", (30 << 20) + 2 * 512 + 7)
            .unwrap();
        path
    }

    /// Reads a whole disk through `map` and `read_at` in 1 MiB pieces.
    pub fn read_all(reader: &mut dyn DiskReader) -> Vec<u8> {
        let size = reader.virtual_size();
        let mut out = vec![0u8; size as usize];
        let mut offset = 0;
        while offset < size {
            let mapping = reader.map(offset).unwrap();
            assert!(mapping.len > 0 && offset + mapping.len <= size);
            let len = mapping.len.min(1 << 20);
            let piece = &mut out[offset as usize..(offset + len) as usize];
            match mapping.extent {
                Extent::Data => reader.read_at(offset, piece).unwrap(),
                Extent::Zero => {}
            }
            offset += len;
        }
        out
    }

    /// The raw bytes padded with zeroes to `size`.
    pub fn raw_padded(raw: &Path, size: u64) -> Vec<u8> {
        let mut bytes = std::fs::read(raw).unwrap();
        assert!(size >= bytes.len() as u64);
        bytes.resize(size as usize, 0);
        bytes
    }

    /// What the generic convert loop does: whole units, all-zero ones skipped.
    pub fn feed(raw: &Path, mut writer: Box<dyn DiskWriter>) {
        let data = std::fs::read(raw).unwrap();
        let unit = writer.granularity() as usize;
        for (i, chunk) in data.chunks(unit).enumerate() {
            if chunk.iter().any(|b| *b != 0) {
                writer.write_data((i * unit) as u64, chunk).unwrap();
            }
        }
        writer.finish().unwrap();
    }

    pub fn target(path: &Path) -> Target<'_> {
        Target {
            path,
            final_path: path,
        }
    }
}

use fixture::*;

/// The footer at the end of a file.
fn end_footer(path: &Path) -> Footer {
    let bytes = std::fs::read(path).unwrap();
    let tail: [u8; 512] = bytes[bytes.len() - 512..].try_into().unwrap();
    Footer::parse(&tail).unwrap()
}

fn open_path(path: &Path) -> Box<dyn DiskReader> {
    open(path, File::open(path).unwrap()).unwrap()
}

const SUBFORMATS: [&str; 4] = [
    "subformat=dynamic",
    "subformat=fixed",
    "subformat=dynamic,force_size=on",
    "subformat=fixed,force_size=on",
];

#[test]
fn qemu_images_read_back_as_the_raw_source() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_image(&mkfs, dir.path());
    for (i, opts) in SUBFORMATS.iter().enumerate() {
        let vhd = dir.path().join(format!("q{i}.vhd"));
        let (r, v) = (raw.to_str().unwrap(), vhd.to_str().unwrap());
        qemu.run(["convert", "-f", "raw", "-O", "vpc", "-o", opts, r, v]);
        let mut reader = open_path(&vhd);
        let size = qemu_virtual_size(&qemu, &vhd, "vpc");
        assert_eq!(reader.virtual_size(), size, "{opts}");
        assert!(
            read_all(reader.as_mut()) == raw_padded(&raw, size),
            "{opts}"
        );
        let info = reader.info();
        let fixed = opts.contains("fixed");
        assert_eq!(
            info.subformat.as_deref(),
            Some(if fixed { "fixed" } else { "dynamic" })
        );
    }
}

#[test]
fn probe_finds_fixed_disks_by_their_tail_and_dynamic_by_their_head() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (opts, name) in [("subformat=fixed", "f.vhd"), ("subformat=dynamic", "d.vhd")] {
        let path = dir.path().join(name);
        qemu.run([
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            opts,
            path.to_str().unwrap(),
            "3M",
        ]);
        let probe = Probe::read(&mut File::open(&path).unwrap()).unwrap();
        assert!(super::probe(&probe), "{opts}");
    }
    let raw = dir.path().join("zero.raw");
    File::create(&raw).unwrap().set_len(1 << 20).unwrap();
    let probe = Probe::read(&mut File::open(&raw).unwrap()).unwrap();
    assert!(!super::probe(&probe));
}

#[test]
fn converted_images_are_byte_identical_to_qemu() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_image(&mkfs, dir.path());
    let raw_len = std::fs::metadata(&raw).unwrap().len();
    for (i, opts) in SUBFORMATS.iter().enumerate() {
        let theirs = dir.path().join(format!("q{i}.vhd"));
        let (r, t) = (raw.to_str().unwrap(), theirs.to_str().unwrap());
        qemu.run(["convert", "-f", "raw", "-O", "vpc", "-o", opts, r, t]);
        let footer = end_footer(&theirs);
        let ours = dir.path().join(format!("o{i}.vhd"));
        let options = Options::parse(&format!(
            "{opts},uuid={},timestamp={}",
            uuid::format(&footer.uuid),
            footer.timestamp
        ))
        .unwrap();
        feed(&raw, create(target(&ours), raw_len, &options).unwrap());
        assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
            "{opts}: output differs from qemu-img's"
        );
        let o = ours.to_str().unwrap();
        qemu.run(["compare", "-f", "raw", "-F", "vpc", r, o]);
        assert!(check(&ours, File::open(&ours).unwrap())
            .unwrap()
            .corruptions
            .is_empty());
    }
}

#[test]
fn blank_images_are_byte_identical_to_qemu_create() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (i, opts) in SUBFORMATS.iter().enumerate() {
        let theirs = dir.path().join(format!("q{i}.vhd"));
        qemu.run([
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            opts,
            theirs.to_str().unwrap(),
            "64M",
        ]);
        let footer = end_footer(&theirs);
        let ours = dir.path().join(format!("o{i}.vhd"));
        let options = Options::parse(&format!(
            "{opts},uuid={},timestamp={}",
            uuid::format(&footer.uuid),
            footer.timestamp
        ))
        .unwrap();
        create(target(&ours), 64 << 20, &options)
            .unwrap()
            .finish()
            .unwrap();
        assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
            "{opts}: blank image differs from qemu-img's"
        );
    }
}

#[test]
fn azure_preset_makes_a_fixed_whole_mib_force_size_disk() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("azure.vhd");
    let size = (5 << 20) + 512;
    create(target(&path), size, &Options::parse("azure=on").unwrap())
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), (6 << 20) + 512);
    let footer = end_footer(&path);
    assert_eq!(footer.disk_type, DiskType::Fixed);
    assert_eq!(footer.creator_app, *b"qem2");
    assert_eq!(qemu_virtual_size(&qemu, &path, "vpc"), 6 << 20);
}

#[test]
fn azure_with_dynamic_subformat_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.vhd");
    let options = Options::parse("azure=on,subformat=dynamic").unwrap();
    let err = create(target(&path), 1 << 20, &options).err().unwrap();
    assert_eq!(err.kind(), crate::ErrorKind::Usage);
}

#[test]
fn unknown_option_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.vhd");
    let options = Options::parse("cluster_size=64K").unwrap();
    assert!(create(target(&path), 1 << 20, &options).is_err());
}

#[test]
fn check_reports_a_damaged_footer_copy_and_overlapping_blocks() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_image(&mkfs, dir.path());
    let vhd = dir.path().join("d.vhd");
    let (r, v) = (raw.to_str().unwrap(), vhd.to_str().unwrap());
    qemu.run(["convert", "-f", "raw", "-O", "vpc", r, v]);
    let clean = check(&vhd, File::open(&vhd).unwrap()).unwrap();
    assert_eq!(clean.exit_code(), 0);
    assert!(clean.allocated_clusters.unwrap() > 0);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&vhd)
        .unwrap();
    // Point the second BAT entry at the first block.
    let mut first = [0u8; 4];
    file.read_exact_at(&mut first, 0x600).unwrap();
    file.write_all_at(&first, 0x604).unwrap();
    // Damage a reserved byte of the footer copy at 0.
    file.write_all_at(&[1], 500).unwrap();
    let report = check(&vhd, File::open(&vhd).unwrap()).unwrap();
    assert_eq!(report.exit_code(), 2);
    assert!(report.corruptions.iter().any(|c| c.contains("overlap")));
    assert!(report.corruptions.iter().any(|c| c.contains("copy")));
}

#[test]
fn fixed_disk_grows_and_keeps_its_data() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("azure.vhd");
    let raw = raw_image(&mkfs, dir.path());
    let raw_len = std::fs::metadata(&raw).unwrap().len();
    feed(
        &raw,
        create(target(&path), raw_len, &Options::parse("azure=on").unwrap()).unwrap(),
    );
    resize(
        &path,
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap(),
        (40 << 20) + 1,
        false,
    )
    .unwrap();
    // Whole MiB kept: 40 MiB + 1 byte becomes 41 MiB.
    assert_eq!(qemu_virtual_size(&qemu, &path, "vpc"), 41 << 20);
    let mut reader = open_path(&path);
    assert!(read_all(reader.as_mut()) == raw_padded(&raw, 41 << 20));
}

#[test]
fn fixed_disk_shrink_needs_the_flag() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.vhd");
    qemu.run([
        "create",
        "-q",
        "-f",
        "vpc",
        "-o",
        "subformat=fixed,force_size=on",
        path.to_str().unwrap(),
        "8M",
    ]);
    let rw = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap()
    };
    assert!(matches!(
        resize(&path, rw(), 4 << 20, false),
        Err(FormatError::ShrinkRefused { .. })
    ));
    resize(&path, rw(), 4 << 20, true).unwrap();
    assert_eq!(qemu_virtual_size(&qemu, &path, "vpc"), 4 << 20);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), (4 << 20) + 512);
}

#[test]
fn dynamic_disk_grows_within_its_bat_and_refuses_beyond() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.vhd");
    // 3 MiB with force_size: two BAT entries, room for 4 MiB.
    qemu.run([
        "create",
        "-q",
        "-f",
        "vpc",
        "-o",
        "force_size=on",
        path.to_str().unwrap(),
        "3M",
    ]);
    let rw = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap()
    };
    resize(&path, rw(), 4 << 20, false).unwrap();
    assert_eq!(qemu_virtual_size(&qemu, &path, "vpc"), 4 << 20);
    assert_eq!(
        check(&path, File::open(&path).unwrap())
            .unwrap()
            .exit_code(),
        0
    );
    let err = resize(&path, rw(), 5 << 20, false).err().unwrap();
    assert!(matches!(err, FormatError::Unsupported { .. }), "{err}");
}

// Hostile inputs: each must give a clear error, never a panic, a hang or a huge allocation.

/// A dynamic image of 4 MiB written by us, then `damage` applied.
fn damaged_dynamic(dir: &Path, damage: impl Fn(&File)) -> PathBuf {
    let path = dir.join("hostile.vhd");
    let options = Options::parse("force_size=on").unwrap();
    let mut writer = create(target(&path), 4 << 20, &options).unwrap();
    writer.write_data(0, &vec![0x5a; 2 << 20]).unwrap();
    writer.finish().unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    damage(&file);
    path
}

/// Rewrites the dynamic header after changing it.
fn patch_header(file: &File, edit: impl Fn(&mut dynamic::DynamicHeader)) {
    let mut raw = [0u8; 1024];
    file.read_exact_at(&mut raw, 512).unwrap();
    let mut header = dynamic::DynamicHeader::decode(&raw).unwrap();
    edit(&mut header);
    file.write_all_at(&header.encode(), 512).unwrap();
}

#[test]
fn truncated_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = damaged_dynamic(dir.path(), |f| f.set_len(300).unwrap());
    assert!(matches!(
        open(&path, File::open(&path).unwrap()),
        Err(FormatError::Malformed { .. })
    ));
}

#[test]
fn block_past_end_of_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = damaged_dynamic(dir.path(), |f| {
        f.write_all_at(&0x00ff_0000u32.to_be_bytes(), 0x600)
            .unwrap()
    });
    let err = open(&path, File::open(&path).unwrap()).err().unwrap();
    assert!(err.to_string().contains("past the end"), "{err}");
}

#[test]
fn huge_bat_is_rejected_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let path = damaged_dynamic(dir.path(), |f| {
        patch_header(f, |h| h.max_table_entries = 0x7fff_ffff)
    });
    assert!(matches!(
        open(&path, File::open(&path).unwrap()),
        Err(FormatError::Malformed { .. })
    ));
    let path = damaged_dynamic(dir.path(), |f| {
        patch_header(f, |h| h.max_table_entries = 1 << 20)
    });
    let err = open(&path, File::open(&path).unwrap()).err().unwrap();
    assert!(err.to_string().contains("BAT past end"), "{err}");
}

#[test]
fn bat_too_small_for_the_disk_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = damaged_dynamic(dir.path(), |f| patch_header(f, |h| h.max_table_entries = 1));
    let err = open(&path, File::open(&path).unwrap()).err().unwrap();
    assert!(err.to_string().contains("cannot cover"), "{err}");
}

#[test]
fn header_offset_past_end_of_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = damaged_dynamic(dir.path(), |f| {
        let len = f.metadata().unwrap().len();
        let mut footer = test_footer(DiskType::Dynamic, 4 << 20);
        footer.data_offset = u64::MAX - 10;
        f.write_all_at(&footer.encode(), len - 512).unwrap();
    });
    let err = open(&path, File::open(&path).unwrap()).err().unwrap();
    assert!(err.to_string().contains("past end"), "{err}");
}

#[test]
fn cleared_bitmap_bits_read_as_zeroes() {
    let dir = tempfile::tempdir().unwrap();
    // The block's bitmap starts at 0x800: clear the bits of sectors 8..16.
    let path = damaged_dynamic(dir.path(), |f| f.write_all_at(&[0x00], 0x801).unwrap());
    let mut reader = open_path(&path);
    assert_eq!(
        reader.map(0).unwrap(),
        crate::formats::Mapping {
            extent: Extent::Data,
            len: 4096
        }
    );
    assert_eq!(reader.map(4096).unwrap().extent, Extent::Zero);
    let data = read_all(reader.as_mut());
    assert!(data[..4096].iter().all(|b| *b == 0x5a));
    assert!(data[4096..8192].iter().all(|b| *b == 0));
    assert!(data[8192..2 << 20].iter().all(|b| *b == 0x5a));
    assert!(data[2 << 20..].iter().all(|b| *b == 0));
}

use footer::test_footer;

/// Bytes `map` reports as zeroes.
fn zero_bytes(reader: &mut dyn DiskReader) -> u64 {
    let (mut offset, mut zero) = (0, 0);
    while offset < reader.virtual_size() {
        let m = reader.map(offset).unwrap();
        if m.extent == Extent::Zero {
            zero += m.len;
        }
        offset += m.len;
    }
    zero
}

#[test]
fn holes_of_a_sparse_fixed_disk_map_as_zeroes() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_image(&mkfs, dir.path());
    let vhd = dir.path().join("f.vhd");
    let (r, v) = (raw.to_str().unwrap(), vhd.to_str().unwrap());
    qemu.run([
        "convert",
        "-f",
        "raw",
        "-O",
        "vpc",
        "-o",
        "subformat=fixed",
        r,
        v,
    ]);
    let mut reader = open_path(&vhd);
    // The 3 MiB hole between the filesystem and the pattern at least.
    assert!(zero_bytes(reader.as_mut()) >= 3 << 20);
    assert!(read_all(reader.as_mut()) == raw_padded(&raw, reader.virtual_size()));
}

#[test]
fn check_reports_a_fixed_disk_shorter_than_its_footer_says() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.vhd");
    qemu.run([
        "create",
        "-q",
        "-f",
        "vpc",
        "-o",
        "subformat=fixed,force_size=on",
        path.to_str().unwrap(),
        "4M",
    ]);
    assert_eq!(
        check(&path, File::open(&path).unwrap())
            .unwrap()
            .exit_code(),
        0
    );
    // Move the footer 1 MiB down: the disk claims 4 MiB but holds 3.
    let footer = std::fs::read(&path).unwrap()[4 << 20..].to_vec();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len((3 << 20) + 512).unwrap();
    file.write_all_at(&footer, 3 << 20).unwrap();
    assert_eq!(
        check(&path, File::open(&path).unwrap())
            .unwrap()
            .exit_code(),
        2
    );
    assert!(open(&path, File::open(&path).unwrap()).is_err());
}

#[test]
fn check_reports_bytes_beyond_a_fixed_disk_as_a_leak() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.vhd");
    qemu.run([
        "create",
        "-q",
        "-f",
        "vpc",
        "-o",
        "subformat=fixed,force_size=on",
        path.to_str().unwrap(),
        "4M",
    ]);
    // Move the footer 1 MiB up: 1 MiB of data that no guest sector reaches.
    let footer = std::fs::read(&path).unwrap()[4 << 20..].to_vec();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0; 512], 4 << 20).unwrap();
    file.write_all_at(&footer, 5 << 20).unwrap();
    assert_eq!(
        check(&path, File::open(&path).unwrap())
            .unwrap()
            .exit_code(),
        3
    );
}

#[test]
fn absurd_sizes_are_refused_without_overflow() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.vhd");
    for opts in ["", "azure=on"] {
        let options = Options::parse(opts).unwrap();
        let err = create(target(&path), u64::MAX, &options).err().unwrap();
        assert!(matches!(err, FormatError::Unsupported { .. }), "{err}");
    }
    qemu.run(["create", "-q", "-f", "vpc", path.to_str().unwrap(), "4M"]);
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    assert!(resize(&path, rw, u64::MAX, false).is_err());
    let mut reader = open_path(&path);
    assert!(reader.map(reader.virtual_size()).is_err());
}

#[test]
fn content_detection_recognises_both_subformats() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    use crate::formats::{detect, Detected, DiskFormat};
    let dir = tempfile::tempdir().unwrap();
    for opts in ["subformat=fixed", "subformat=dynamic"] {
        let path = dir.path().join("x.vhd");
        qemu.run([
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            opts,
            path.to_str().unwrap(),
            "3M",
        ]);
        let probe = Probe::read(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!(detect(&probe), Detected::Disk(DiskFormat::Vhd), "{opts}");
        let reader = crate::formats::open(&path, None).unwrap();
        assert_eq!(reader.info().format, DiskFormat::Vhd);
    }
}

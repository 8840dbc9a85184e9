//! Oracle tests against qemu-img 10: reading its VDIs, writing byte-identical ones, check,
//! resize and hostile inputs.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::header::{swap_guid, VdiHeader};
use super::*;
use crate::formats::vhd::tests::fixture::*;
use crate::formats::{DiskReader, Options, Probe};
use crate::test_tools::{oracles, qemu_virtual_size};

fn header_of(path: &Path) -> VdiHeader {
    let mut area = [0u8; 512];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut area, 0)
        .unwrap();
    VdiHeader::parse(&area).unwrap()
}

fn open_path(path: &Path) -> Box<dyn DiskReader> {
    open(path, File::open(path).unwrap()).unwrap()
}

fn rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

/// Options reproducing the UUIDs qemu drew for `theirs`.
fn same_uuids(theirs: &Path, opts: &str) -> Options {
    let h = header_of(theirs);
    Options::parse(&format!(
        "{opts},uuid={},uuid_last_snap={}",
        crate::formats::uuid::format(&swap_guid(&h.uuid_image)),
        crate::formats::uuid::format(&swap_guid(&h.uuid_last_snap)),
    ))
    .unwrap()
}

const SUBFORMATS: [&str; 2] = ["static=off", "static=on"];

#[test]
fn qemu_images_read_back_as_the_raw_source() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_image(&mkfs, dir.path());
    for (i, opts) in SUBFORMATS.iter().enumerate() {
        let vdi = dir.path().join(format!("q{i}.vdi"));
        let (r, v) = (raw.to_str().unwrap(), vdi.to_str().unwrap());
        qemu.run(["convert", "-f", "raw", "-O", "vdi", "-o", opts, r, v]);
        let mut reader = open_path(&vdi);
        let size = qemu_virtual_size(&qemu, &vdi, "vdi");
        assert_eq!(reader.virtual_size(), size, "{opts}");
        assert!(
            read_all(reader.as_mut()) == raw_padded(&raw, size),
            "{opts}"
        );
        let expected = if opts.ends_with("on") {
            "static"
        } else {
            "dynamic"
        };
        assert_eq!(reader.info().subformat.as_deref(), Some(expected));
        assert_eq!(
            check(&vdi, File::open(&vdi).unwrap()).unwrap().exit_code(),
            0
        );
    }
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
        let theirs = dir.path().join(format!("q{i}.vdi"));
        let (r, t) = (raw.to_str().unwrap(), theirs.to_str().unwrap());
        qemu.run(["convert", "-f", "raw", "-O", "vdi", "-o", opts, r, t]);
        let ours = dir.path().join(format!("o{i}.vdi"));
        feed(
            &raw,
            create(target(&ours), raw_len, &same_uuids(&theirs, opts)).unwrap(),
        );
        assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
            "{opts}: output differs from qemu-img's"
        );
        let o = ours.to_str().unwrap();
        qemu.run(["check", "-f", "vdi", o]);
        qemu.run(["compare", "-f", "raw", "-F", "vdi", r, o]);
    }
}

#[test]
fn blank_images_are_byte_identical_to_qemu_create() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (opts, size) in [
        ("static=off", "1G"),
        ("static=off", "513M"),
        ("static=on", "3M"),
    ] {
        let theirs = dir.path().join("theirs.vdi");
        qemu.run([
            "create",
            "-q",
            "-f",
            "vdi",
            "-o",
            opts,
            theirs.to_str().unwrap(),
            size,
        ]);
        let ours = dir.path().join("ours.vdi");
        let bytes = crate::formats::options::parse_size(size).unwrap();
        create(target(&ours), bytes, &same_uuids(&theirs, opts))
            .unwrap()
            .finish()
            .unwrap();
        assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
            "{opts} {size}: blank image differs from qemu-img's"
        );
    }
}

#[test]
fn unknown_option_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.vdi");
    let options = Options::parse("subformat=fixed").unwrap();
    assert!(create(target(&path), 1 << 20, &options).is_err());
}

#[test]
fn probe_finds_the_signature() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.vdi");
    qemu.run(["create", "-q", "-f", "vdi", path.to_str().unwrap(), "3M"]);
    assert!(super::probe(
        &Probe::read(&mut File::open(&path).unwrap()).unwrap()
    ));
    let raw = dir.path().join("zero.raw");
    File::create(&raw).unwrap().set_len(1 << 20).unwrap();
    assert!(!super::probe(
        &Probe::read(&mut File::open(&raw).unwrap()).unwrap()
    ));
}

/// A dynamic VDI of 4 MiB written by us with blocks 0 and 2 allocated, then `damage` applied.
fn damaged(dir: &Path, damage: impl Fn(&File)) -> PathBuf {
    let path = dir.join("hostile.vdi");
    let mut writer = create(target(&path), 4 << 20, &Options::default()).unwrap();
    writer.write_data(0, &vec![0x5a; 1 << 20]).unwrap();
    writer.write_data(2 << 20, &vec![0xa5; 1 << 20]).unwrap();
    writer.finish().unwrap();
    damage(&rw(&path));
    path
}

#[test]
fn written_image_reads_back_and_checks_clean() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = damaged(dir.path(), |_| {});
    qemu.run(["check", "-f", "vdi", path.to_str().unwrap()]);
    let report = check(&path, File::open(&path).unwrap()).unwrap();
    assert_eq!(
        (report.exit_code(), report.allocated_clusters),
        (0, Some(2))
    );
    let data = read_all(open_path(&path).as_mut());
    assert!(data[..1 << 20].iter().all(|b| *b == 0x5a));
    assert!(data[1 << 20..2 << 20].iter().all(|b| *b == 0));
    assert!(data[2 << 20..3 << 20].iter().all(|b| *b == 0xa5));
}

#[test]
fn check_reports_a_shared_block_and_a_wrong_count() {
    let dir = tempfile::tempdir().unwrap();
    // Guest block 1 also maps to host block 0.
    let path = damaged(dir.path(), |f| {
        f.write_all_at(&0u32.to_le_bytes(), 0x204).unwrap()
    });
    let report = check(&path, File::open(&path).unwrap()).unwrap();
    assert_eq!(report.exit_code(), 2);
    assert!(report.corruptions.iter().any(|c| c.contains("both map")));
    // Guest block 1 maps beyond the allocated count.
    let path = damaged(dir.path(), |f| {
        f.write_all_at(&7u32.to_le_bytes(), 0x204).unwrap()
    });
    let report = check(&path, File::open(&path).unwrap()).unwrap();
    assert!(report.corruptions.iter().any(|c| c.contains("beyond")));
    // The header claims one block more than the map uses.
    let path = damaged(dir.path(), |f| f.write_all_at(&[3], 0x184).unwrap());
    let report = check(&path, File::open(&path).unwrap()).unwrap();
    assert!(report.corruptions.iter().any(|c| c.contains("allocated")));
}

#[test]
fn truncated_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = damaged(dir.path(), |f| f.set_len(0x180).unwrap());
    assert!(matches!(
        open(&path, File::open(&path).unwrap()),
        Err(FormatError::Malformed { .. })
    ));
    let path = damaged(dir.path(), |f| f.set_len(0x400 + (1 << 20)).unwrap());
    let err = open(&path, File::open(&path).unwrap()).err().unwrap();
    assert!(err.to_string().contains("past the end"), "{err}");
}

#[test]
fn block_past_end_of_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = damaged(dir.path(), |f| {
        f.write_all_at(&0x0fff_0000u32.to_le_bytes(), 0x200)
            .unwrap()
    });
    let err = open(&path, File::open(&path).unwrap()).err().unwrap();
    assert!(err.to_string().contains("past the end"), "{err}");
}

#[test]
fn block_map_past_end_of_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    // 16M blocks (the cap) with the data offset moved to fit them: the map is not in the file.
    let path = damaged(dir.path(), |f| {
        f.write_all_at(&(16u32 << 20).to_le_bytes(), 0x180).unwrap();
        f.write_all_at(&(0x200u32 + (64 << 20)).to_le_bytes(), 0x158)
            .unwrap();
    });
    let err = open(&path, File::open(&path).unwrap()).err().unwrap();
    assert!(err.to_string().contains("block map"), "{err}");
}

#[test]
fn dynamic_image_grows_within_its_block_map_and_refuses_beyond() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_image(&mkfs, dir.path());
    let vdi = dir.path().join("d.vdi");
    let (r, v) = (raw.to_str().unwrap(), vdi.to_str().unwrap());
    qemu.run(["convert", "-f", "raw", "-O", "vdi", r, v]);
    // The map at 0x200..0x400 holds 128 entries.
    resize(&vdi, rw(&vdi), 100 << 20, false).unwrap();
    assert_eq!(qemu_virtual_size(&qemu, &vdi, "vdi"), 100 << 20);
    qemu.run(["check", "-f", "vdi", v]);
    assert!(read_all(open_path(&vdi).as_mut()) == raw_padded(&raw, 100 << 20));
    let err = resize(&vdi, rw(&vdi), 129 << 20, false).err().unwrap();
    assert!(matches!(err, FormatError::Unsupported { .. }), "{err}");
    let err = resize(&vdi, rw(&vdi), 1 << 20, false).err().unwrap();
    assert!(matches!(err, FormatError::ShrinkRefused { .. }), "{err}");
}

#[test]
fn static_image_grows_preallocated() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let vdi = dir.path().join("s.vdi");
    let v = vdi.to_str().unwrap();
    qemu.run(["create", "-q", "-f", "vdi", "-o", "static=on", v, "3M"]);
    resize(&vdi, rw(&vdi), 10 << 20, false).unwrap();
    qemu.run(["check", "-f", "vdi", v]);
    assert_eq!(qemu_virtual_size(&qemu, &vdi, "vdi"), 10 << 20);
    let h = header_of(&vdi);
    assert_eq!((h.blocks_in_image, h.blocks_allocated), (10, 10));
    assert_eq!(std::fs::metadata(&vdi).unwrap().len(), 0x400 + (10 << 20));
}

#[test]
fn holes_of_a_sparse_static_image_map_as_zeroes() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_image(&mkfs, dir.path());
    let vdi = dir.path().join("s.vdi");
    let (r, v) = (raw.to_str().unwrap(), vdi.to_str().unwrap());
    qemu.run(["convert", "-f", "raw", "-O", "vdi", "-o", "static=on", r, v]);
    let mut reader = open_path(&vdi);
    let (mut offset, mut zero) = (0, 0);
    while offset < reader.virtual_size() {
        let m = reader.map(offset).unwrap();
        if m.extent == crate::formats::Extent::Zero {
            zero += m.len;
        }
        offset += m.len;
    }
    assert!(zero >= 3 << 20, "{zero}");
}

#[test]
fn zero_entries_read_as_zeroes() {
    let dir = tempfile::tempdir().unwrap();
    // Block 0 discarded to zeroes (0xfffffffe).
    let path = damaged(dir.path(), |f| {
        f.write_all_at(&0xffff_fffeu32.to_le_bytes(), 0x200)
            .unwrap()
    });
    let mut reader = open_path(&path);
    assert_eq!(reader.map(0).unwrap().extent, crate::formats::Extent::Zero);
    let data = read_all(reader.as_mut());
    assert!(data[..2 << 20].iter().all(|b| *b == 0));
    assert!(data[2 << 20..3 << 20].iter().all(|b| *b == 0xa5));
}

#[test]
fn absurd_sizes_are_refused_without_overflow() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.vdi");
    let err = create(target(&path), u64::MAX, &Options::default())
        .err()
        .unwrap();
    assert!(matches!(err, FormatError::Unsupported { .. }), "{err}");
    qemu.run(["create", "-q", "-f", "vdi", path.to_str().unwrap(), "4M"]);
    assert!(resize(&path, rw(&path), u64::MAX, false).is_err());
    let mut reader = open_path(&path);
    assert!(reader.map(reader.virtual_size()).is_err());
}

#[test]
fn content_detection_recognises_vdi() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    use crate::formats::{detect, Detected, DiskFormat};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.vdi");
    qemu.run(["create", "-q", "-f", "vdi", path.to_str().unwrap(), "3M"]);
    let probe = Probe::read(&mut File::open(&path).unwrap()).unwrap();
    assert_eq!(detect(&probe), Detected::Disk(DiskFormat::Vdi));
    let reader = crate::formats::open(&path, None).unwrap();
    assert_eq!(reader.virtual_size(), 3 << 20);
}

//! Oracle tests against qemu-img 10: reading its VHDX byte for byte as it reads them, writing
//! the same layout, `check` and `compare` on ours, the log that needs replay, hostile inputs.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::header::{seal, HEADER_SIZE};
use super::*;
use crate::formats::vhd::tests::fixture::{feed, raw_image, read_all, target};
use crate::test_tools::{oracles, Tool};

/// The option sets exercised, as given to `qemu-img convert -O vhdx -o`.
const OPTIONS: [&str; 7] = [
    "subformat=dynamic",
    "subformat=fixed",
    "subformat=dynamic,block_size=1M",
    "subformat=dynamic,block_state_zero=off",
    "subformat=fixed,block_state_zero=off",
    "subformat=dynamic,log_size=3M,block_size=32M",
    "subformat=fixed,block_size=2M",
];

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn open_path(path: &Path) -> Result<Box<dyn DiskReader>, FormatError> {
    open(path, File::open(path).unwrap())
}

/// qemu-img's own reading of an image: its conversion to raw.
fn qemu_reading(qemu: &Tool, image: &Path, dir: &Path) -> Vec<u8> {
    let out = dir.join("qemu-reading.raw");
    qemu.run(["convert", "-f", "vhdx", "-O", "raw", s(image), s(&out)]);
    std::fs::read(&out).unwrap()
}

fn qemu_convert(qemu: &Tool, raw: &Path, opts: &str, out: &Path) {
    qemu.run([
        "convert",
        "-f",
        "raw",
        "-O",
        "vhdx",
        "-o",
        opts,
        s(raw),
        s(out),
    ]);
}

#[test]
fn qemu_images_read_as_qemu_reads_them() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_image(&mkfs, dir.path());
    for (i, opts) in OPTIONS.iter().enumerate() {
        let vhdx = dir.path().join(format!("q{i}.vhdx"));
        qemu_convert(&qemu, &raw, opts, &vhdx);
        let mut reader = open_path(&vhdx).unwrap();
        let theirs = qemu_reading(&qemu, &vhdx, dir.path());
        assert_eq!(reader.virtual_size(), theirs.len() as u64, "{opts}");
        assert!(read_all(reader.as_mut()) == theirs, "{opts}");
        let info = reader.info();
        let fixed = opts.contains("fixed");
        assert_eq!(
            info.subformat.as_deref(),
            Some(if fixed { "fixed" } else { "dynamic" }),
            "{opts}"
        );
    }
}

/// Byte ranges where qemu writes random or self-describing values: the creator string, the
/// two headers (sequence numbers, GUIDs), the log (qemu leaves its applied BAT updates there)
/// and the page 83 identifier.
fn random_ranges(image: &Path) -> Vec<std::ops::Range<u64>> {
    let file = File::open(image).unwrap();
    let mut entry = [0u8; 32];
    // The region table's second entry: the metadata region's offset.
    file.read_exact_at(&mut entry, region::TABLE1_OFFSET + 48)
        .unwrap();
    let metadata = u64::from_le_bytes(entry[16..24].try_into().unwrap());
    let mut head = [0u8; 80];
    file.read_exact_at(&mut head, header::HEADER1_OFFSET)
        .unwrap();
    let log_offset = u64::from_le_bytes(head[72..80].try_into().unwrap());
    let log_length = u64::from(u32::from_le_bytes(head[68..72].try_into().unwrap()));
    let page83 = metadata + metadata::TABLE_SIZE as u64 + 16;
    vec![
        8..header::FILE_ID_SIZE as u64,
        header::HEADER1_OFFSET..region::TABLE1_OFFSET,
        log_offset..log_offset + log_length,
        page83..page83 + 16,
    ]
}

fn masked(image: &Path, ranges: &[std::ops::Range<u64>]) -> Vec<u8> {
    let mut bytes = std::fs::read(image).unwrap();
    for range in ranges {
        let end = (range.end as usize).min(bytes.len());
        bytes[(range.start as usize).min(end)..end].fill(0);
    }
    bytes
}

#[test]
fn converted_images_match_qemu_but_for_its_random_fields() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_image(&mkfs, dir.path());
    let raw_len = std::fs::metadata(&raw).unwrap().len();
    for (i, opts) in OPTIONS.iter().enumerate() {
        let theirs = dir.path().join(format!("q{i}.vhdx"));
        qemu_convert(&qemu, &raw, opts, &theirs);
        let ours = dir.path().join(format!("o{i}.vhdx"));
        let options = Options::parse(opts).unwrap();
        feed(&raw, create(target(&ours), raw_len, &options).unwrap());
        let ranges = random_ranges(&theirs);
        assert_eq!(ranges, random_ranges(&ours), "{opts}");
        let (a, b) = (masked(&ours, &ranges), masked(&theirs, &ranges));
        let first = a.iter().zip(&b).position(|(x, y)| x != y);
        assert!(
            a == b,
            "{opts}: bytes differ, lengths {} and {}, first at {first:x?}",
            a.len(),
            b.len()
        );
        qemu.run(["check", "-f", "vhdx", s(&ours)]);
        qemu.run(["compare", "-f", "raw", "-F", "vhdx", s(&raw), s(&ours)]);
        // And the log of ours is empty: nothing to replay, nothing left behind.
        let log = &std::fs::read(&ours).unwrap()[ranges[2].start as usize..ranges[2].end as usize];
        assert!(log.iter().all(|b| *b == 0), "{opts}");
    }
}

#[test]
fn created_blank_images_match_qemu_create() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (size, opts) in [
        ("64M", "subformat=dynamic"),
        ("2G", "subformat=dynamic"),
        ("200G", "subformat=dynamic"),
        ("100M", "subformat=fixed"),
        ("100M", "subformat=fixed,block_state_zero=off"),
        ("100M", "log_size=1500K,block_size=1536K"),
    ] {
        let theirs = dir.path().join("q.vhdx");
        qemu.run(["create", "-q", "-f", "vhdx", "-o", opts, s(&theirs), size]);
        let ours = dir.path().join("o.vhdx");
        let bytes = crate::formats::options::parse_size(size).unwrap();
        let writer = create(target(&ours), bytes, &Options::parse(opts).unwrap()).unwrap();
        writer.finish().unwrap();
        let ranges = random_ranges(&theirs);
        assert!(
            masked(&ours, &ranges) == masked(&theirs, &ranges),
            "{size} {opts}"
        );
        qemu.run(["check", "-f", "vhdx", s(&ours)]);
    }
}

#[test]
fn probe_knows_vhdx_by_its_signature() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.vhdx");
    qemu.run(["create", "-q", "-f", "vhdx", s(&path), "3M"]);
    let probe = Probe::read(&mut File::open(&path).unwrap()).unwrap();
    assert!(super::probe(&probe));
    assert_eq!(
        crate::formats::detect(&probe),
        crate::formats::Detected::Disk(crate::formats::DiskFormat::Vhdx)
    );
    let raw = dir.path().join("zero.raw");
    File::create(&raw).unwrap().set_len(1 << 20).unwrap();
    let probe = Probe::read(&mut File::open(&raw).unwrap()).unwrap();
    assert!(!super::probe(&probe));
}

/// The current header: the valid one with the larger sequence number.
fn current_header_offset(path: &Path) -> u64 {
    let file = File::open(path).unwrap();
    let mut seq = [[0u8; 8]; 2];
    file.read_exact_at(&mut seq[0], header::HEADER1_OFFSET + 8)
        .unwrap();
    file.read_exact_at(&mut seq[1], header::HEADER2_OFFSET + 8)
        .unwrap();
    if u64::from_le_bytes(seq[0]) > u64::from_le_bytes(seq[1]) {
        header::HEADER1_OFFSET
    } else {
        header::HEADER2_OFFSET
    }
}

/// Sets the log GUID of the current header (and reseals it), as a crash between writing the
/// log and applying it leaves a file.
fn set_log_guid(path: &Path, log_guid: &[u8; 16]) {
    let at = current_header_offset(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut bytes = [0u8; HEADER_SIZE];
    file.read_exact_at(&mut bytes, at).unwrap();
    bytes[48..64].copy_from_slice(log_guid);
    seal(&mut bytes);
    file.write_all_at(&bytes, at).unwrap();
}

/// The log GUID of the last entry qemu left in the log of one of its images.
fn last_log_entry_guid(path: &Path) -> [u8; 16] {
    let bytes = std::fs::read(path).unwrap();
    let log = &bytes[1 << 20..2 << 20];
    let (_, guid) = log
        .chunks(4096)
        .filter(|sector| sector.starts_with(b"loge"))
        .map(|sector| {
            let seq = u64::from_le_bytes(sector[16..24].try_into().unwrap());
            (seq, <[u8; 16]>::try_from(&sector[32..48]).unwrap())
        })
        .max()
        .expect("qemu leaves its BAT updates in the log");
    guid
}

#[test]
fn a_log_that_needs_replay_is_refused_as_qemu_refuses_it() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_image(&mkfs, dir.path());
    let path = dir.path().join("dirty.vhdx");
    qemu_convert(&qemu, &raw, "subformat=dynamic", &path);
    set_log_guid(&path, &last_log_entry_guid(&path));
    // The oracle: qemu-img will not read it without replaying (-r).
    let out = qemu.output(["info", "-f", "vhdx", s(&path)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("replay"));
    let error = open_path(&path).err().expect("refused");
    assert!(error.to_string().contains("never applied"), "{error}");
    assert!(
        matches!(error, FormatError::Unsupported { .. }),
        "{error:?}"
    );
    // The same file once qemu has replayed its log opens.
    qemu.run(["check", "-q", "-r", "all", "-f", "vhdx", s(&path)]);
    assert!(open_path(&path).is_ok());
}

#[test]
fn a_log_guid_without_entries_needs_no_replay() {
    let Some([qemu]) = oracles(["qemu-img"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clean.vhdx");
    qemu.run(["create", "-q", "-f", "vhdx", s(&path), "64M"]);
    set_log_guid(&path, &[0x5a; 16]);
    qemu.run(["info", "-f", "vhdx", s(&path)]);
    assert!(open_path(&path).is_ok());
}

#[test]
fn check_is_clean_on_qemu_images_and_reports_a_damaged_header_copy() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_image(&mkfs, dir.path());
    let path = dir.path().join("q.vhdx");
    qemu_convert(&qemu, &raw, "subformat=dynamic,block_size=1M", &path);
    let report = check(&path, File::open(&path).unwrap()).unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    assert!(report.allocated_clusters.unwrap() > 0);
    assert_eq!(report.total_clusters, Some(31));
    // Damage the older header: the disk still reads, check says what is wrong.
    let older = header::HEADER1_OFFSET + header::HEADER2_OFFSET - current_header_offset(&path);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0xff], older + 200).unwrap();
    assert!(open_path(&path).is_ok());
    let report = check(&path, File::open(&path).unwrap()).unwrap();
    assert_eq!(report.exit_code(), 2, "{report:?}");
}

#[test]
fn hostile_files_fail_cleanly() {
    let Some([qemu, mkfs]) = oracles(["qemu-img", "mkfs.ext4"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_image(&mkfs, dir.path());
    let good = dir.path().join("good.vhdx");
    qemu_convert(&qemu, &raw, "subformat=dynamic", &good);
    let bytes = std::fs::read(&good).unwrap();
    let bat = 2usize << 20;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", bytes[..(3 << 20) / 2].to_vec()),
        ("signature only", b"vhdxfile".to_vec()),
        ("no BAT", bytes[..(5 << 19)].to_vec()),
    ];
    // The first BAT entry pointing 1 TiB away.
    let mut far = bytes.clone();
    far[bat..bat + 8].copy_from_slice(&((1u64 << 40) | 6).to_le_bytes());
    cases.push(("block beyond the file", far));
    // The first block on top of the metadata.
    let mut on_metadata = bytes.clone();
    on_metadata[bat..bat + 8].copy_from_slice(&((3u64 << 20) | 6).to_le_bytes());
    cases.push(("block on the metadata", on_metadata));
    // Region table with a CRC flipped in both copies.
    let mut crc = bytes.clone();
    crc[(192 << 10) + 4] ^= 1;
    cases.push(("region table CRC", crc));
    for (name, content) in cases {
        let path = dir.path().join("hostile.vhdx");
        std::fs::write(&path, &content).unwrap();
        assert!(open_path(&path).is_err(), "{name}: opened");
        assert!(check(&path, File::open(&path).unwrap()).is_err() || name.contains("block"));
    }
}

#[test]
fn options_are_checked_as_qemu_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.vhdx");
    for opts in [
        "block_size=3M",
        "log_size=0",
        "subformat=differencing",
        "block_state_zero=maybe",
        "preallocation=full",
    ] {
        let options = Options::parse(opts).unwrap();
        assert!(
            matches!(
                create(target(&out), 1 << 30, &options),
                Err(FormatError::InvalidOption { .. })
            ),
            "{opts}"
        );
    }
    assert!(matches!(
        create(target(&out), 65 << 40, &Options::default()),
        Err(FormatError::Unsupported { .. })
    ));
    create(target(&out), 1 << 30, &Options::default())
        .unwrap()
        .finish()
        .unwrap();
    assert!(resize(&out, File::open(&out).unwrap(), 2 << 30, false).is_err());
}

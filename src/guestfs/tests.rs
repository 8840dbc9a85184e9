//! Oracle tests: real filesystems and partition tables made by mkfs.ext4/mkfs.ext2 and sfdisk,
//! read by this room and compared with their source files and with `debugfs`; and the real
//! bootable guest of the bake tests (`CLOUDIMG_TEST_GUEST`), whose kernel and initrd must match
//! what debugfs dumps from it.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ext4::{Ext4, Kind};
use super::{boot, gpt, GuestFsError, Volume};
use crate::formats::{self, DiskFormat, DiskReader};
use crate::test_tools::{missing, oracles, run, Tool};

/// The fixture makers and oracles: mke2fs (`mkfs.ext4 -t KIND -d`), debugfs, sfdisk, qemu-img.
struct Tools {
    mkfs: Tool,
    debugfs: Tool,
    sfdisk: Tool,
    qemu_img: Tool,
}

fn tools() -> Option<Tools> {
    let [mkfs, debugfs, sfdisk, qemu_img] =
        oracles(["mkfs.ext4", "debugfs", "sfdisk", "qemu-img"])?;
    Some(Tools {
        mkfs,
        debugfs,
        sfdisk,
        qemu_img,
    })
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
    let Some(tools) = tools() else { return };
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
    tools
        .qemu_img
        .run(["convert", "-O", "raw", &spec, s(&part)]);
    for (path, ours) in [
        (&found.kernel.path, &kernel),
        (&found.initrds[0].path, &initrd),
    ] {
        let out = dir.path().join("dumped");
        let request = format!("dump {path} {}", s(&out));
        tools.debugfs.run(["-R", &request, s(&part)]);
        let theirs = std::fs::read(&out).unwrap();
        assert_eq!(theirs.len(), ours.len(), "{path}");
        assert_eq!(sha256(&theirs), sha256(ours), "{path}");
    }
}

/// Deterministic pseudo-random bytes, so a misplaced block never matches by chance.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut bytes = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

/// Data at these offsets of `sparse.bin`, holes between: with 1 KiB blocks the last one lies
/// beyond the double indirect block's reach (triple indirect), and the ten runs need an
/// extent tree of depth 1 (the inode holds 4 extents).
const SPARSE_RUNS: [(u64, usize); 10] = [
    (0, 5000),
    (1 << 20, 4096),
    (3 << 20, 100),
    (5 << 20, 8192),
    (7 << 20, 1),
    (9 << 20, 3000),
    (11 << 20, 4096),
    (13 << 20, 4096),
    (15 << 20, 4096),
    (70 << 20, 777),
];
/// Size of `prealloc`, a hole in which debugfs allocates unwritten extents (blocks 0–15).
const PREALLOC_LEN: u64 = 64 * 1024;
/// How deep `deep/` nests.
const DEPTH: usize = 24;
/// Files in `big/`, enough for a directory of several blocks.
const BIG_DIR_FILES: usize = 300;

/// The source tree copied into every test filesystem.
fn source_tree(root: &Path) {
    use std::os::unix::fs::{symlink, FileExt};
    let boot = root.join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::write(boot.join("vmlinuz-1.0"), noise(300_001, 1)).unwrap();
    std::fs::write(boot.join("initrd.img-1.0"), noise(1 << 20, 2)).unwrap();
    std::fs::create_dir(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/fstab"), "LABEL=testroot / ext4 ro 0 1\n").unwrap();
    std::fs::write(root.join("empty"), "").unwrap();
    std::fs::File::create(root.join("prealloc"))
        .unwrap()
        .set_len(PREALLOC_LEN)
        .unwrap();
    let sparse = std::fs::File::create(root.join("sparse.bin")).unwrap();
    for (i, (at, len)) in SPARSE_RUNS.into_iter().enumerate() {
        sparse.write_all_at(&noise(len, 10 + i as u64), at).unwrap();
    }
    let mut deep = root.join("deep");
    for level in 0..DEPTH {
        deep = deep.join(format!("level{level}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("leaf"), noise(10_000, 3)).unwrap();
    std::fs::create_dir(root.join("big")).unwrap();
    for i in 0..BIG_DIR_FILES {
        std::fs::write(
            root.join(format!("big/file-with-a-long-name-{i:04}")),
            i.to_string(),
        )
        .unwrap();
    }
    symlink("boot/vmlinuz-1.0", root.join("vmlinuz")).unwrap(); // relative
    symlink("/boot/initrd.img-1.0", root.join("initrd.img")).unwrap(); // absolute
    symlink("../../../../boot/vmlinuz-1.0", root.join("boot/escape")).unwrap(); // `..` past /
    let deep_target = (0..DEPTH)
        .map(|level| format!("level{level}"))
        .collect::<Vec<_>>()
        .join("/");
    symlink(format!("deep/{deep_target}/leaf"), root.join("long")).unwrap(); // > 60 bytes
    symlink("loop2", root.join("loop1")).unwrap();
    symlink("loop1", root.join("loop2")).unwrap();
    symlink("boot", root.join("bootdir")).unwrap(); // a link to a directory, used mid-path
}

/// Every regular file and symbolic link under `root`, as paths from the root ("/a/b").
fn listing(root: &Path) -> Vec<(String, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            let rel = entry.path().strip_prefix(root).unwrap().to_owned();
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                out.push((format!("/{}", rel.display()), meta));
            }
        }
    }
    out
}

/// `mkfs.ext4 -t kind -d src` into a new `size`-byte file.
fn mkfs(tools: &Tools, kind: &str, extra: &[&str], src: &Path, image: &Path, size: &str) {
    let mut args = vec!["-q", "-F", "-t", kind, "-L", "testroot", "-d", s(src)];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[s(image), size]);
    tools.mkfs.run(args);
}

fn open_raw(path: &Path) -> Box<dyn DiskReader> {
    formats::open(path, Some(DiskFormat::Raw)).unwrap()
}

/// The (logical, physical) data blocks of `path` as `debugfs -R "stat PATH"` lists them
/// (its `EXTENTS:` or `BLOCKS:` section; tree and indirect blocks left out).
fn debugfs_map(tools: &Tools, image: &Path, path: &str) -> Vec<(u64, u64)> {
    let mut command = tools.debugfs.command();
    command
        .env("DEBUGFS_PAGER", "__none__")
        .args(["-R", &format!("stat {path}"), s(image)]);
    let out = run(&mut command);
    let text = String::from_utf8(out.stdout).unwrap();
    let section = text
        .split_once("EXTENTS:\n")
        .or_else(|| text.split_once("BLOCKS:\n"))
        .map(|(_, rest)| rest)
        .unwrap_or("");
    let range = |text: &str| -> Option<(u64, u64)> {
        match text.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => text.parse().ok().map(|a| (a, a)),
        }
    };
    let mut map = Vec::new();
    for item in section
        .lines()
        .take_while(|l| !l.starts_with("TOTAL") && !l.is_empty())
        .flat_map(|l| l.split(", "))
    {
        let (key, value) = item.split_once("):").unwrap();
        let Some((first, last)) = range(key.trim_start_matches('(')) else {
            continue; // (IND), (DIND), (TIND), (ETB0)…
        };
        let (start, _) = range(value.trim()).unwrap();
        map.extend((first..=last).map(|l| (l, start + (l - first))));
    }
    map
}

/// The (logical, physical) data blocks of an inode as this reader maps them.
fn our_map(fs: &mut Ext4<'_>, path: &str) -> Vec<(u64, u64)> {
    let inode = fs.resolve_nofollow(path).unwrap();
    let limit = inode.size.div_ceil(fs.superblock().block_size);
    let mut map = Vec::new();
    fs.for_each_run(&inode, &mut |run| {
        if let Some(p) = run.physical {
            let end = (run.logical + run.len).min(limit);
            map.extend((run.logical..end).map(|l| (l, p + (l - run.logical))));
        }
    })
    .unwrap();
    map
}

/// Reads every file and link of the source tree back from `image` and checks it against the
/// source, and the block maps of the interesting files against debugfs.
fn check_filesystem(tools: &Tools, image: &Path, src: &Path) {
    let mut reader = open_raw(image);
    let mut fs = Ext4::open(Volume::whole(&mut *reader)).unwrap();
    assert_eq!(fs.superblock().label, "testroot");
    for (path, meta) in listing(src) {
        let host = src.join(path.trim_start_matches('/'));
        let inode = fs.resolve_nofollow(&path).unwrap();
        if meta.file_type().is_symlink() {
            assert_eq!(inode.kind(), Kind::Symlink, "{path}");
            let target = std::fs::read_link(&host).unwrap();
            assert_eq!(
                fs.read_link(&inode).unwrap(),
                target.as_os_str().as_encoded_bytes(),
                "{path}"
            );
        } else {
            assert_eq!(inode.kind(), Kind::File, "{path}");
            let mut ours = Vec::new();
            assert_eq!(fs.copy(&inode, &mut ours).unwrap(), meta.len(), "{path}");
            assert!(ours == std::fs::read(&host).unwrap(), "{path} differs");
        }
    }
    // Links followed: relative, absolute, `..` above the root, a >60-byte link, a link to a
    // directory in the middle of a path.
    let kernel = std::fs::read(src.join("boot/vmlinuz-1.0")).unwrap();
    for (path, expected) in [
        ("/vmlinuz", kernel.clone()),
        ("/boot/escape", kernel.clone()),
        ("/bootdir/vmlinuz-1.0", kernel),
        (
            "/initrd.img",
            std::fs::read(src.join("boot/initrd.img-1.0")).unwrap(),
        ),
        ("/long", noise(10_000, 3)),
        ("/./boot/../deep/level0/../../vmlinuz", noise(300_001, 1)),
    ] {
        let inode = fs.resolve(path).unwrap();
        let mut ours = Vec::new();
        fs.copy(&inode, &mut ours).unwrap();
        assert!(ours == expected, "{path}");
    }
    for (path, expected) in [
        ("/loop1", "too many levels of symbolic links"),
        ("/nothing", "no such file"),
        ("/vmlinuz/x", "not a directory"),
        ("/big/file-with-a-long-name-9999", "no such file"),
    ] {
        let err = fs.resolve(path).unwrap_err().to_string();
        assert!(err.contains(expected), "{path}: {err}");
    }
    let last = format!("/big/file-with-a-long-name-{:04}", BIG_DIR_FILES - 1);
    let inode = fs.resolve(&last).unwrap();
    assert_eq!(
        fs.read_file(&inode, 100, &last).unwrap(),
        (BIG_DIR_FILES - 1).to_string().as_bytes()
    );
    // The oracle for the block maps: debugfs lists the same data blocks in the same order.
    for path in ["/sparse.bin", "/boot/initrd.img-1.0", "/long", "/big"] {
        let theirs = debugfs_map(tools, image, path);
        assert!(!theirs.is_empty(), "{path}");
        assert_eq!(our_map(&mut fs, path), theirs, "{path}");
    }
}

/// Builds the source tree and one filesystem per layout, and reads each back.
#[test]
fn ext2_ext3_and_ext4_read_back_as_mkfs_wrote_them() {
    let Some(tools) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    source_tree(&src);
    let layouts: [(&str, &[&str]); 6] = [
        ("ext4", &[]),                             // extents, 64bit, flex_bg, metadata_csum
        ("ext4", &["-b", "1024", "-O", "^64bit"]), // 1 KiB blocks, 32-byte descriptors
        ("ext4", &["-O", "^extent,^64bit"]),       // ext4 with classic block maps
        ("ext2", &["-b", "1024"]),                 // double and triple indirect blocks
        ("ext3", &["-b", "2048", "-I", "128"]),    // a journal, 128-byte inodes
        // meta_bg: 16 inodes in each group of 256 blocks, so the tree's inodes spread over
        // ~25 groups whose descriptors lie in two meta groups.
        (
            "ext4",
            &[
                "-b",
                "1024",
                "-g",
                "256",
                "-i",
                "16384",
                "-O",
                "meta_bg,^resize_inode,^flex_bg",
            ],
        ),
    ];
    for (kind, extra) in layouts {
        let image = dir.path().join("fs.img");
        mkfs(&tools, kind, extra, &src, &image, "96M");
        let extents = kind == "ext4" && !extra.iter().any(|arg| arg.contains("^extent"));
        if extents {
            // Unwritten (preallocated) extents read as zeroes, like the hole they replace.
            tools
                .debugfs
                .run(["-w", "-R", "fallocate /prealloc 0 15", s(&image)]);
            let mut reader = open_raw(&image);
            let mut fs = Ext4::open(Volume::whole(&mut *reader)).unwrap();
            let inode = fs.resolve("/prealloc").unwrap();
            let mut runs = Vec::new();
            fs.for_each_run(&inode, &mut |run| runs.push(run)).unwrap();
            assert!(
                runs.first()
                    .is_some_and(|run| run.logical == 0 && run.physical.is_none()),
                "{runs:?}"
            );
        }
        check_filesystem(&tools, &image, &src);
        std::fs::remove_file(&image).unwrap();
    }
}

/// An Ubuntu noble grub.cfg on its /boot partition, abridged: paths from that partition's root.
const UBUNTU_GRUB_CFG: &str = r#"#
# DO NOT EDIT THIS FILE
#
if [ -s $prefix/grubenv ]; then
  set have_grubenv=true
  load_env
fi
function recordfail {
  set recordfail=1
  if [ -n "${have_grubenv}" ]; then if [ -z "${boot_once}" ]; then save_env recordfail; fi; fi
}
set timeout=0
menuentry 'Ubuntu' --class ubuntu --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-1c5b' {
	recordfail
	load_video
	gfxmode $linux_gfx_mode
	insmod gzio
	if [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
	insmod part_gpt
	insmod ext2
	search --no-floppy --fs-uuid --set=root 1c5b2f0e-0b8d-4a55-9e4d-0b1d6f1c2a3b
	linux	/vmlinuz-6.8.0-49-generic root=LABEL=cloudimg-rootfs ro  console=tty1 console=ttyS0
	initrd	/initrd.img-6.8.0-49-generic
}
submenu 'Advanced options for Ubuntu' $menuentry_id_option 'gnulinux-advanced-1c5b' {
	menuentry 'Ubuntu, with Linux 6.8.0-49-generic (recovery mode)' {
		linux	/vmlinuz-6.8.0-49-generic root=LABEL=cloudimg-rootfs ro recovery nomodeset
	}
}
"#;

/// Copies `fs` into `disk` at byte `at`, leaving zero MiBs as holes.
fn place(fs: &Path, disk: &Path, at: u64) {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let disk = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    let mut input = std::fs::File::open(fs).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = at;
    loop {
        let n = input.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            disk.write_all_at(&buf[..n], offset).unwrap();
        }
        offset += n as u64;
    }
}

/// `sfdisk DISK < script`.
fn sfdisk(tools: &Tools, disk: &Path, script: &str) {
    let script_file = disk.with_extension("sfdisk");
    std::fs::write(&script_file, script).unwrap();
    let mut command = tools.sfdisk.command();
    command
        .args(["--quiet", s(disk)])
        .stdin(std::fs::File::open(&script_file).unwrap());
    run(&mut command);
}

fn extract(reader: &mut dyn DiskReader, found: &boot::BootFiles) -> (Vec<u8>, Vec<u8>) {
    let (mut kernel, mut initrd) = (Vec::new(), Vec::new());
    boot::extract(reader, found, &mut kernel, &mut initrd).unwrap();
    (kernel, initrd)
}

/// Ubuntu's layout: GPT, p1 root, p14 BIOS boot, p16 /boot (label BOOT) holding grub.cfg,
/// kernel and initrd. The root partition holds a decoy kernel at the same path, which must not
/// be read: GRUB's paths belong to the partition where grub.cfg was found.
#[test]
fn a_gpt_disk_with_a_separate_boot_partition_boots_from_it() {
    use std::os::unix::fs::symlink;
    let Some(tools) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (root_src, boot_src) = (dir.path().join("root"), dir.path().join("boot"));
    std::fs::create_dir_all(root_src.join("etc")).unwrap();
    std::fs::create_dir_all(root_src.join("boot")).unwrap();
    std::fs::write(root_src.join("vmlinuz-6.8.0-49-generic"), "decoy").unwrap();
    std::fs::create_dir_all(boot_src.join("grub")).unwrap();
    std::fs::write(boot_src.join("grub/grub.cfg"), UBUNTU_GRUB_CFG).unwrap();
    let kernel = noise(200_000, 7);
    let initrd = noise(700_001, 8);
    std::fs::write(boot_src.join("vmlinuz-6.8.0-49-generic"), &kernel).unwrap();
    std::fs::write(boot_src.join("initrd.img-6.8.0-49-generic"), &initrd).unwrap();
    symlink("vmlinuz-6.8.0-49-generic", boot_src.join("vmlinuz")).unwrap();

    let disk = dir.path().join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(40 << 20)
        .unwrap();
    let script = format!(
        "label: gpt\n\
         {d}1 : start=10240, size=49152, type={linux}, name=cloudimg-rootfs\n\
         {d}14 : start=2048, size=8192, type={bios}\n\
         {d}16 : start=59392, size=16384, type={xboot}, name=BOOT\n",
        d = s(&disk),
        linux = gpt::LINUX_FILESYSTEM,
        bios = gpt::BIOS_BOOT,
        xboot = gpt::LINUX_EXTENDED_BOOT,
    );
    sfdisk(&tools, &disk, &script);
    let (root_fs, boot_fs) = (dir.path().join("root.img"), dir.path().join("boot.img"));
    mkfs(&tools, "ext4", &[], &root_src, &root_fs, "24M");
    mkfs(&tools, "ext4", &["-L", "BOOT"], &boot_src, &boot_fs, "8M");
    place(&root_fs, &disk, 10240 * 512);
    place(&boot_fs, &disk, 59392 * 512);

    let mut reader = open_raw(&disk);
    let table = gpt::read(&mut Volume::whole(&mut *reader)).unwrap();
    let gpt::Table::Gpt(parts) = &table else {
        panic!("{table:?}")
    };
    let numbers: Vec<(u32, &str)> = parts.iter().map(|p| (p.number, p.name.as_str())).collect();
    assert_eq!(numbers, [(1, "cloudimg-rootfs"), (14, ""), (16, "BOOT")]);

    let found = boot::find(&mut *reader).unwrap();
    assert_eq!(found.kernel.location.partition, Some(16));
    assert_eq!(found.kernel.location.start, 59392 * 512);
    assert_eq!(found.kernel.path, "/vmlinuz-6.8.0-49-generic");
    assert_eq!(found.initrds[0].path, "/initrd.img-6.8.0-49-generic");
    assert_eq!(
        found.cmdline,
        "BOOT_IMAGE=/vmlinuz-6.8.0-49-generic root=LABEL=cloudimg-rootfs ro console=tty1 console=ttyS0"
    );
    assert_eq!(found.source, "partition 16: /grub/grub.cfg, line 13");
    let extracted = extract(&mut *reader, &found);
    assert!(extracted == (kernel.clone(), initrd.clone()));

    // A damaged primary header (one byte of its entry count): the backup at the end serves.
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        file.write_all_at(&[0x81], 512 + 80).unwrap();
    }
    let mut damaged = open_raw(&disk);
    assert_eq!(gpt::read(&mut Volume::whole(&mut *damaged)).unwrap(), table);

    // The same disk as qcow2 (qemu-img writes it): the same files through another reader.
    let qcow2 = dir.path().join("disk.qcow2");
    tools
        .qemu_img
        .run(["convert", "-f", "raw", "-O", "qcow2", s(&disk), s(&qcow2)]);
    let mut reader = formats::open(&qcow2, None).unwrap();
    assert_eq!(boot::find(&mut *reader).unwrap(), found);
    assert!(extract(&mut *reader, &found) == (kernel, initrd));
}

/// No grub.cfg: Debian's /vmlinuz and /initrd.img links on the root filesystem, whether it is
/// an MBR partition or the whole disk; `root=` from the filesystem's label.
#[test]
fn without_grub_cfg_the_vmlinuz_links_of_the_root_filesystem_boot() {
    let Some(tools) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    source_tree(&src);
    let fs = dir.path().join("fs.img");
    mkfs(&tools, "ext4", &[], &src, &fs, "96M");
    let disk = dir.path().join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    sfdisk(&tools, &disk, "label: dos\nstart=2048, type=83\n");
    place(&fs, &disk, 2048 * 512);
    for (image, partition) in [(&disk, Some(1)), (&fs, None)] {
        let mut reader = open_raw(image);
        let found = boot::find(&mut *reader).unwrap();
        assert_eq!(found.kernel.location.partition, partition);
        assert_eq!(found.kernel.path, "/vmlinuz");
        assert_eq!(found.cmdline, "root=LABEL=testroot ro");
        assert!(
            found.source.ends_with("/vmlinuz (no grub.cfg)"),
            "{}",
            found.source
        );
        let (kernel, initrd) = extract(&mut *reader, &found);
        assert!(kernel == noise(300_001, 1));
        assert!(initrd == noise(1 << 20, 2));
    }
}

#[test]
fn a_disk_without_linux_or_boot_files_says_what_it_searched() {
    let dir = tempfile::tempdir().unwrap();
    let zero = dir.path().join("zero.raw");
    std::fs::File::create(&zero)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let err = boot::find(&mut *open_raw(&zero)).unwrap_err();
    assert!(
        matches!(err, GuestFsError::NoLinuxFilesystem { .. }),
        "{err}"
    );

    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("boot")).unwrap();
    let fs = dir.path().join("fs.img");
    let Some(tools) = tools() else { return };
    mkfs(&tools, "ext4", &[], &src, &fs, "8M");
    let err = boot::find(&mut *open_raw(&fs)).unwrap_err().to_string();
    assert!(
        err.contains("the whole disk: no /boot/grub/grub.cfg; the whole disk: no /grub/grub.cfg"),
        "{err}"
    );
}
